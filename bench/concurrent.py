"""Recordings in child processes (`bench.runner`), warmed up first and started together, measured apart.

Every child warms its recorder; once all are ready they get `go` at the same moment, so the recordings
overlap for their whole length. The process tree of each child is sampled from /proc throughout; the CPU
and memory of a recording are read over its capture window (first frame to stop), which leaves out
Chromium's start-up and the finalize/analysis that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procstats import TreeSampler, machine_jiffies
from bench.runner import Job

CAPTURE_CATEGORIES = ("chromium", "ffmpeg", "xvfb", "pulseaudio", "gstreamer")


@dataclass
class Outcome:
    index: int
    ready: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    returncode: int | None = None
    log: Path | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.done and self.done.get("ok"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "ok": self.ok,
            "problem": self.problem,
            "warm_s": (self.ready or {}).get("warm_s"),
            "done": self.done,
            "usage": self.usage,
        }


@dataclass
class Batch:
    outcomes: list[Outcome]
    go_at: float
    machine_cpu: dict[str, float] = field(default_factory=dict)


async def _read_event(stream: asyncio.StreamReader, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no '{name}' within {timeout:g} s")
        raw = await asyncio.wait_for(stream.readline(), remaining)
        if not raw:
            raise EOFError(f"the recording process ended before '{name}'")
        with contextlib.suppress(ValueError):
            message = json.loads(raw)
            if message.get("event") == name:
                return message


async def _end(proc: asyncio.subprocess.Process, outcome: Outcome) -> None:
    """Let a finished runner stop its recorder; a stuck one gets SIGTERM (it still cleans up), then SIGKILL."""
    with contextlib.suppress(TimeoutError):
        outcome.returncode = await asyncio.wait_for(proc.wait(), 60 if outcome.done else 0.5)
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        outcome.returncode = await asyncio.wait_for(proc.wait(), 60)
    except TimeoutError:
        proc.kill()
        outcome.returncode = await proc.wait()


def usage_summary(sampler: TreeSampler, group: str, start: float | None, end: float | None) -> dict[str, Any] | None:
    usage = sampler.usage(group, start, end)
    if usage is None:
        return None
    data = usage.as_dict()
    data["capture_cores"] = round(sum(usage.cpu_cores.get(c, 0.0) for c in CAPTURE_CATEGORIES), 3)
    # The paced grab takes and converts the pictures in the recorder's own process: counted with the capture
    # where captures are compared (a peer's command runs beside the same recorder process, grabbing nothing).
    data["capture_cores_with_recorder"] = round(data["capture_cores"] + usage.cpu_cores.get("recorder", 0.0), 3)
    pss = usage.peak_pss_mb_by_category
    data["capture_peak_pss_mb"] = round(sum(pss.get(c, 0.0) for c in CAPTURE_CATEGORIES), 1) if pss else None
    rss = usage.peak_rss_mb_by_category
    data["capture_peak_rss_mb"] = round(sum(rss.get(c, 0.0) for c in CAPTURE_CATEGORIES), 1)
    return data


async def record_concurrently(
    jobs: list[Job],
    *,
    log_dir: Path,
    ready_timeout: float = 180.0,
    sample_interval: float = 1.0,
    sampler: TreeSampler | None = None,
) -> Batch:
    """Run `jobs` at once, one process each; returns when every one has finished (or failed)."""
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    outcomes = [Outcome(index=i, log=log_dir / f"runner-{i}.log") for i in range(len(jobs))]
    procs: list[asyncio.subprocess.Process] = []
    sampler = sampler or TreeSampler(interval=sample_interval)
    sampler.start()
    go_at = time.time()
    machine: dict[str, float] = {}
    try:
        for job, outcome in zip(jobs, outcomes, strict=True):
            assert outcome.log is not None
            with outcome.log.open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.runner",
                    job.to_json(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log,
                    limit=1 << 22,
                )
            procs.append(proc)
            sampler.watch(f"r{outcome.index}", proc.pid)
        readies = await asyncio.gather(
            *(_read_event(p.stdout, "ready", ready_timeout) for p in procs if p.stdout), return_exceptions=True
        )
        for outcome, ready in zip(outcomes, readies, strict=True):
            if isinstance(ready, BaseException):
                outcome.problem = f"not ready: {ready}"
            else:
                outcome.ready = ready
        if any(o.problem for o in outcomes):
            return Batch(outcomes, go_at)
        busy0, total0 = machine_jiffies()
        go_at = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        timeout = 2 * max(j.duration for j in jobs) + 300.0
        dones = await asyncio.gather(
            *(_read_event(p.stdout, "done", timeout) for p in procs if p.stdout), return_exceptions=True
        )
        for outcome, done in zip(outcomes, dones, strict=True):
            if isinstance(done, BaseException):
                outcome.problem = f"did not finish: {done}"
                continue
            outcome.done = done
        starts = [o.done["capture_from"] for o in outcomes if o.done and o.done.get("capture_from")]
        ends = [o.done["capture_to"] for o in outcomes if o.done and o.done.get("capture_to")]
        busy1, total1 = machine_jiffies()
        machine = {
            "cores_busy_whole_run": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 3),
            "all_capturing_from": max(starts) if starts else 0.0,
            "all_capturing_to": min(ends) if ends else 0.0,
        }
    finally:
        await asyncio.gather(*(_end(proc, outcome) for proc, outcome in zip(procs, outcomes, strict=False)))
        sampler.stop()
    for outcome in outcomes:
        if outcome.done:
            outcome.usage = usage_summary(
                sampler, f"r{outcome.index}", outcome.done.get("capture_from"), outcome.done.get("capture_to")
            )
    if machine.get("all_capturing_to", 0.0) > machine.get("all_capturing_from", 0.0):
        # While every recording was capturing: the machine's busy cores against the sum of our trees'. The rest
        # is this process (sampler, page server) and anything else running on the machine.
        window = (machine["all_capturing_from"], machine["all_capturing_to"])
        whole = sampler.machine_cores(*window)
        ours = [sampler.usage(f"r{o.index}", *window) for o in outcomes]
        machine["machine_cores_while_all_capture"] = round(whole, 3) if whole is not None else None
        machine["recordings_cores_while_all_capture"] = round(sum(u.cpu_cores_total for u in ours if u), 3)
    return Batch(outcomes, go_at, machine)
