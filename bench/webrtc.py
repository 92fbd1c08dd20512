"""What following a page's WebRTC connections costs: the CPU of Chromium and the recorder with the timeline's
wrapper (recorder/timeline/webrtc.js, stats polled once a second, the watch in Python) against without it.
With `--lever screen-mode`, the same page instead compares the display's refresh: Xvfb's default (Chromium
draws at 60 Hz) against a mode at the capture rate (RECORDER_SCREEN_MODE, 30 Hz), wrapper off.

    python -m bench webrtc [--lever wrapper|screen-mode] [--runs 3] [--duration 30]

The WebRTC loopback page (recorder/reference/webrtc.py: a 30 fps canvas sent from one RTCPeerConnection to
another and played) in one warm Chromium (a fresh one per run for the screen mode), a fresh context per
run, arms alternating (off, on, on, off, ...) so a drifting machine load hits both. A run measures, from
START_RECORDING plus 2 s for `duration` s, the CPU seconds of every Chromium process
(recorder.source.browser.Browser.processes) and of this process (the binding and the watch run here), and
the frames the page's <video> presented. The egress guard is off: its WebRTC policy leaves the in-page call
no candidate (see the page's docstring). No FFmpeg runs: the figure is the page side alone, which is where
the wrapper works. Writes bench/results/webrtc-<date>.json.
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

ARMS = {"wrapper": ("off", "on"), "screen-mode": ("60 Hz", "30 Hz")}
SLOW_FPS = 27.0  # a 30 fps call presented slower than this lost a picture in ten


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


def recorder_for(root: Path, arm: str) -> Recorder:
    """The wrapper arms share the default display; a screen-mode arm asks for its own."""
    settings: dict[str, Any] = {"records_dir": root / "records", "egress_guard": False}
    if arm in ARMS["screen-mode"]:
        settings["screen_mode"] = arm == "30 Hz"
    return Recorder(RecorderSettings(**settings))


async def run(lever: str, runs: int, duration: float) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="bench-webrtc-"))
    page = ReferencePage(ReferenceMedia(root))  # the loopback page needs no clip
    page.start()
    shared = lever == "wrapper"
    recorder = recorder_for(root, "off") if shared else None
    results: list[dict[str, Any]] = []
    try:
        url = page.url("/webrtc")
        for _, arm in alternating(list(ARMS[lever]), runs):
            if not shared:
                recorder = recorder_for(root, arm)
            assert recorder is not None
            try:
                await recorder.prepare(1280, 720)
                result = await one_run(recorder, url, arm, duration)
            finally:
                if not shared:
                    await recorder.close()
            results.append(result)
            print(json.dumps(result), flush=True)
            await asyncio.sleep(2)
    finally:
        if recorder is not None:
            await recorder.close()
        page.stop()
    return results


def summarise(lever: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for arm in ARMS[lever]:
        mine = [r for r in results if r["arm"] == arm]
        summary[arm] = {
            key: round(statistics.fmean(r[key] for r in mine), 4)
            for key in ("cores", "chromium_cpu_s", "recorder_cpu_s", "presented_fps")
        }
        summary[arm]["presented_fps_min"] = min(r["presented_fps"] for r in mine)
        summary[arm]["runs_below_slow_fps"] = f"{sum(r['presented_fps'] < SLOW_FPS for r in mine)} of {len(mine)}"
    base, other = (summary[arm]["cores"] for arm in ARMS[lever])
    summary["cores_ratio"] = round(other / base, 4) if base else None
    summary["added_cores"] = round(other - base, 4)
    return summary


NOTES = {
    "wrapper": "Same build, same page, one run; only the WebRTC wrapper differs. Target: on/off cores within 3%.",
    "screen-mode": "Same build, same page, one run; only the display's refresh differs (wrapper off). "
    f"runs_below_slow_fps counts runs that presented under {SLOW_FPS:g} of the call's 30 fps.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webrtc", description=__doc__.splitlines()[0])
    parser.add_argument("--lever", choices=sorted(ARMS), default="wrapper", help="what the two arms differ in")
    parser.add_argument("--runs", type=int, default=3, help="runs per arm, alternating")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured in each run")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet = machine.quiet()[1]
    info = machine.describe()
    results = asyncio.run(run(args.lever, args.runs, args.duration))
    summary = summarise(args.lever, results)
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        path = write_result(
            "webrtc",
            {"summary": summary, "runs": results},
            options=vars(args) | {"quiet_check": quiet},
            machine_info=info,
            notes=NOTES[args.lever],
        )
        print(f"wrote {path}")
    return 0
