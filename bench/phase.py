"""Phase: where Chromium presents each page's video on the clock, load after load, in one browser.

    python -m bench phase [--loads 4] [--fresh] [--settle 1.0] [--watch 1.2]

The paced grab places its grid half a frame from the page's video draws, and a part of a recording after
a pause is placed by the phase the part before saw (a phase carried from one page load to the next was
tried and dropped: docs/benchmarks.md, "The learnt phase, dropped; calibration by a trimmed mean"). This
loads each page in turn, `--loads` times, in one recorder (or with `--fresh` a new one per round), waits
`--settle` seconds for its drawing to settle, watches the screen's changes for `--watch` seconds and
reports the phase of the capture rate they gathered at and how tightly (mean resultant length, 1: all at
one phase), and their phase on Chromium's own 16.666 ms ticks. Whether a phase holds from one load of a
page to the next, whether it carries from page to page, and how fast it drifts, decide what a known
phase may be used for.
Writes bench/results/phase-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cmath
import json
import math
import statistics
import time
from typing import Any

from bench import machine, page
from bench.results import write_result
from contract.spec import RecordingSpec
from recorder.capture.grabber import FOLLOW_AGREEMENT, PHASE_AGREEMENT, ScreenGrabber, video_phase
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.reference.page import ReferencePage

FPS = 30
TICK = 0.016666  # Chromium's frame interval where no display rate is known: 1/60 s in whole microseconds
JOIN = [{"do": "fill", "selector": "#name", "value": "Recorder"}, {"do": "click", "selector": "#join"}]
# name -> (path, what it plays); each is opened as a recording would open it.
PAGES = {
    "grid-1k": ("/grid?tone=1000", "four videos, one the sync clip with a 1 kHz beep"),
    "grid-440": ("/grid?tone=440", "the same page with the 440 Hz sync clip"),
    "meeting": ("/meeting?lobby=0", "the reference meeting's tiles, joined by its script"),
    "tiles-file": ("/media/tiles-a.webm", "one silent clip opened as a media document"),
    "animation": ("/animation?tone=1000", "the sync clip beside canvases drawn on every animation frame"),
}


def _spec(test_page: ReferencePage, name: str) -> RecordingSpec:
    path = PAGES[name][0]
    fields: dict[str, Any] = {"url": test_page.url(path)}
    if name == "meeting":
        fields |= {"actions": JOIN, "wait_for": {"kind": "selector", "selector": "#meeting video", "timeout": 20}}
    return RecordingSpec.model_validate(fields)


def _watch(recorder: Recorder, seconds: float) -> dict[str, Any]:
    assert recorder.display is not None and recorder.display.name is not None
    grabber = ScreenGrabber(recorder.display.name, recorder.width, recorder.height, FPS)
    grabber.open()
    try:
        time.sleep(seconds)
        draws = grabber.seen()
    finally:
        grabber.close()
    seen = video_phase(draws, 1 / FPS)
    on_ticks = video_phase(draws, TICK)
    span = draws[-1] - draws[0] if len(draws) > 1 else 0.0
    return {
        "at_s": round(draws[-1], 3) if draws else None,
        "draws_per_s": round((len(draws) - 1) / span, 1) if span else 0.0,
        "phase_ms": None if seen is None else round(seen[0] * 1000, 2),
        "agreement": None if seen is None else round(seen[1], 3),
        "tick_phase_ms": None if on_ticks is None else round(on_ticks[0] * 1000, 2),
        "tick_agreement": None if on_ticks is None else round(on_ticks[1], 3),
    }


async def _load(recorder: Recorder, test_page: ReferencePage, name: str, settle: float, watch: float) -> dict:
    session = await recorder.browser.open_ready(_spec(test_page, name))  # type: ignore[union-attr]
    try:
        await asyncio.sleep(settle)
        return {"page": name, **await asyncio.to_thread(_watch, recorder, watch)}
    finally:
        await session.close()


async def run(settings: RecorderSettings, test_page: ReferencePage, args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    recorder = Recorder(settings)
    try:
        for load in range(args.loads):
            if args.fresh or load == 0:
                await recorder.close()
                recorder = Recorder(settings)
                await recorder.start()
            for name in args.pages:
                row = {"load": load, **await _load(recorder, test_page, name, args.settle, args.watch)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        await recorder.close()
    return rows


def _circular(phases_ms: list[float], period_ms: float) -> tuple[float, float]:
    """Mean phase and the largest distance of any phase from it, on the circle of `period_ms`."""
    mean = cmath.phase(sum(cmath.exp(2j * math.pi * p / period_ms) for p in phases_ms)) / (2 * math.pi) * period_ms
    mean %= period_ms
    return mean, max(_gap(p, mean, period_ms) for p in phases_ms)


def _gap(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


def _drift(times: list[float], phases_ms: list[float], period_ms: float) -> float | None:
    """ms per minute the phase moved over the run: a line through the phases, unwrapped in time order."""
    if len(times) < 3 or times[-1] - times[0] < 20:
        return None
    unwrapped = [phases_ms[0]]
    for phase in phases_ms[1:]:
        step = (phase - unwrapped[-1] + period_ms / 2) % period_ms - period_ms / 2
        unwrapped.append(unwrapped[-1] + step)
    slope = statistics.linear_regression(times, unwrapped).slope
    return round(slope * 60, 2)


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per page: its loads' phase (those with a rhythm), their widest gap from it and its drift; between
    pages; and where every load's draws sat on Chromium's ticks."""
    period = 1000 / FPS
    per_page: dict[str, Any] = {}
    for name in dict.fromkeys(r["page"] for r in rows):
        kept = [r for r in rows if r["page"] == name and (r["agreement"] or 0) >= PHASE_AGREEMENT]
        phases = [r["phase_ms"] for r in kept]
        entry: dict[str, Any] = {"loads": sum(r["page"] == name for r in rows), "with_a_rhythm": len(phases)}
        if phases:
            mean, widest = _circular(phases, period)
            drift = _drift([r["at_s"] for r in kept], phases, period)
            entry |= {"phase_ms": round(mean, 1), "widest_gap_ms": round(widest, 1), "drift_ms_per_min": drift}
        per_page[name] = entry
    on_ticks: dict[str, Any] = {}
    for name in per_page:
        ticked = [
            r["tick_phase_ms"] for r in rows if r["page"] == name and (r["tick_agreement"] or 0) >= FOLLOW_AGREEMENT
        ]
        if ticked:
            mean, widest = _circular(ticked, TICK * 1000)
            on_ticks[name] = {"loads": len(ticked), "phase_ms": round(mean, 1), "widest_gap_ms": round(widest, 1)}
    placed = {name: e["phase_ms"] for name, e in per_page.items() if "phase_ms" in e}
    between = {
        f"{a} / {b}": round(_gap(placed[a], placed[b], period), 1)
        for i, a in enumerate(placed)
        for b in list(placed)[i + 1 :]
    }
    return {"pages": per_page, "gap_between_pages_ms": between, "on_chromium_ticks": on_ticks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench phase", description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=4, help="rounds over the pages (default 4)")
    parser.add_argument("--pages", nargs="+", choices=sorted(PAGES), default=list(PAGES))
    parser.add_argument("--fresh", action="store_true", help="a fresh recorder (Xvfb, Chromium) for every round")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after the page is ready (default 1)")
    parser.add_argument("--watch", type=float, default=1.2, help="seconds of changes watched (default 1.2)")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    with page.serve() as test_page:
        url = page.grid_url(test_page)
        settings = page.recorder_settings(url, self_calibrate=False)
        rows = asyncio.run(run(settings, test_page, args))
    summary = summarize(rows)
    print(json.dumps(summary))
    if not args.no_write:
        path = write_result(
            "phase",
            {"summary": summary, "loads": rows},
            options={
                "loads": args.loads,
                "pages": {name: PAGES[name] for name in args.pages},
                "fresh": args.fresh,
                "settle_s": args.settle,
                "watch_s": args.watch,
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="phase_ms: where the last second of the screen's changes gathered, monotonic time modulo "
            "the 30 fps frame interval; agreement: their mean resultant length; tick_phase_ms: the same "
            f"modulo Chromium's {TICK * 1000:g} ms tick; at_s: monotonic time of the load's last change. A "
            f"page's phase counts its loads with agreement >= {PHASE_AGREEMENT}, its place on the ticks those "
            f"with tick_agreement >= {FOLLOW_AGREEMENT}.",
        )
        print(f"wrote {path}")
    return 0
