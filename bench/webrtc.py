"""What following a page's WebRTC connections costs: the CPU of Chromium and the recorder with the timeline's
wrapper (recorder/timeline/webrtc.js, stats polled once a second, the watch in Python) against without it.

    python -m bench webrtc [--runs 3] [--duration 30]

The WebRTC loopback page (recorder/reference/webrtc.py: a 30 fps canvas sent from one RTCPeerConnection to
another and played) in one warm Chromium, a fresh context per run, arms alternating (off, on, on, off, ...)
so a drifting machine load hits both. A run measures, from START_RECORDING plus 2 s for `duration` s, the
CPU seconds of every Chromium process (recorder.source.browser.Browser.processes) and of this process (the
binding and the watch run here), and the frames the page's <video> presented. The egress guard is off: its
WebRTC policy leaves the in-page call no candidate (see the page's docstring). No FFmpeg runs: the figure is
the page side alone, which is where the wrapper works. Writes bench/results/webrtc-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.order import alternating
from bench.procstats import CLK_TCK, read_proc
from bench.results import write_result
from contract.spec import RecordingSpec
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.reference.media import ReferenceMedia
from recorder.reference.page import ReferencePage
from recorder.timeline.collector import TimelineCollector
from recorder.timeline.webrtc import install_webrtc_wrapper, watch_webrtc

ARMS = ("off", "on")


def ticks_of(pids: set[int]) -> dict[int, int]:
    return {pid: info.ticks for pid in pids if (info := read_proc(pid)) is not None}


async def one_run(recorder: Recorder, url: str, arm: str, duration: float) -> dict[str, Any]:
    assert recorder.browser is not None
    session = await recorder.browser.open(RecordingSpec(url=url, duration=duration))
    watch = None
    try:
        if arm == "on":
            await install_webrtc_wrapper(session.context)
        page = session.page
        assert page is not None
        started = asyncio.Event()
        page.on("console", lambda message: started.set() if "START_RECORDING" in message.text else None)
        collector = TimelineCollector()
        if arm == "on":
            watch = await watch_webrtc(page, collector)
        await page.goto(url)
        await asyncio.wait_for(started.wait(), 20)
        await asyncio.sleep(2)
        chromium_before, own_before = ticks_of(set(recorder.browser.processes())), os.times()
        frames_before, began = await page.evaluate("window.loopback.presented"), time.monotonic()
        await asyncio.sleep(duration)
        chromium_after = ticks_of(set(recorder.browser.processes()))
        # A process born in the window counts from zero; one that died in it loses its ticks (none should).
        chromium = sum(ticks - chromium_before.get(pid, 0) for pid, ticks in chromium_after.items())
        own_after = os.times()
        frames_after, ended = await page.evaluate("window.loopback.presented"), time.monotonic()
        elapsed = ended - began
        own = (own_after.user - own_before.user) + (own_after.system - own_before.system)
        return {
            "arm": arm,
            "seconds": round(elapsed, 2),
            "chromium_cpu_s": round(chromium / CLK_TCK, 2),
            "recorder_cpu_s": round(own, 2),
            "cores": round((chromium / CLK_TCK + own) / elapsed, 4),
            "presented_fps": round((frames_after - frames_before) / elapsed, 2),
            "tracks": len(watch.tracks) if watch is not None else None,
            "processes": len(chromium_after),
        }
    finally:
        if watch is not None:
            await watch.stop()
        await session.close()


async def run(runs: int, duration: float) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    page = ReferencePage(ReferenceMedia(root))  # the loopback page needs no clip
    page.start()
    recorder = Recorder(RecorderSettings(records_dir=root / "records", egress_guard=False))
    results: list[dict[str, Any]] = []
    try:
        await recorder.prepare(1280, 720)
        url = page.url("/webrtc")
        for _, arm in alternating(list(ARMS), runs):
            result = await one_run(recorder, url, arm, duration)
            results.append(result)
            print(json.dumps(result), flush=True)
            await asyncio.sleep(2)
    finally:
        await recorder.close()
        page.stop()
    return results


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in results if r["arm"] == arm]
        summary[arm] = {
            key: round(statistics.fmean(r[key] for r in mine), 4)
            for key in ("cores", "chromium_cpu_s", "recorder_cpu_s", "presented_fps")
        }
    off, on = summary["off"]["cores"], summary["on"]["cores"]
    summary["on_vs_off_cores"] = round(on / off, 4) if off else None
    summary["added_cores"] = round(on - off, 4)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webrtc", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per arm, alternating")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured in each run")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet = machine.quiet()[1]
    info = machine.describe()
    results = asyncio.run(run(args.runs, args.duration))
    summary = summarise(results)
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        path = write_result(
            "webrtc",
            {"summary": summary, "runs": results},
            options=vars(args) | {"quiet_check": quiet},
            machine_info=info,
            notes="Same build, same page, one run; only the WebRTC wrapper differs. Target: on/off cores within 3%.",
        )
        print(f"wrote {path}")
    return 0
