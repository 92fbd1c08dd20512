"""Sync: the A/V offset of many single recordings, one after another, and how it spreads between them.

    python -m bench sync [--recordings 10] [--duration 10] [--cold] [--screen-mode on|off]
                         [--grabber x11grab|damage] [--decompose]

A file's offset has a part the machine always adds (what calibration removes) and a part of its own.
First the recorder's self-calibration runs as a worker's would (it measures only when no calibration for
this machine type and version is stored). Then this records the reference page N times (on one warm
recorder, or with `--cold` a fresh recorder each time, as a new pod would) with the offset in force and
reports, per recording, the mean offset, its spread within the file, p95, distinct fps and the longest
repeat; and across recordings, the spread of the means and how many were within 15 ms. With
`--decompose`, each offset is also split at the moment the flash reached the screen
(bench/screen_flashes.py): the recorder's video delay and the page's own part, with their spreads.
Writes bench/results/sync-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import machine, page
from bench.metrics import recording_figures
from bench.results import write_result
from bench.screen_flashes import ScreenFlashes, split_offset
from contract.spec import RecordingSpec
from recorder.attempt import AttemptFolder
from recorder.calibrate import Run, ensure_calibrated
from recorder.capture import calibration
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder

WITHIN_MS = 15.0
KEPT = ("av_mean_ms", "av_std_ms", "av_p95_abs_ms", "av_markers", "steady_fps", "longest_repeat_frames", "duration_s")


async def _one(
    recorder: Recorder, url: str, duration: float, where: Path, index: int, decompose: bool
) -> dict[str, Any]:
    spec = RecordingSpec(url=url, duration=duration)
    watch = None
    if decompose:
        await recorder.prepare(spec.width, spec.height, spec.fps)
        assert recorder.display is not None and recorder.display.name is not None
        # The centre of the sync clip's tile, the grid's top-left quarter.
        watch = ScreenFlashes(recorder.display.name, spec.width // 4, spec.height // 4)
        watch.start()
    try:
        result = await recorder.record(spec, folder=AttemptFolder.under(where, f"r{index}"))
    finally:
        on_screen = watch.stop() if watch is not None else []
    sidecar = json.loads(result.sidecar.read_text()) if result.sidecar else {}
    row = recording_figures({"ok": result.error is None, "quality": sidecar.get("quality")}, None)
    applied = sidecar.get("av_offset_correction_ms")
    lateness = sidecar.get("presentation_lateness_ms")
    figures = {
        "index": index,
        "av_offset_applied_ms": applied,
        "presentation_lateness_ms": lateness,
        **{key: row.get(key) for key in KEPT},
    }
    if applied is not None and figures["av_mean_ms"] is not None:
        # What the file needed, and that plus the page load's lateness, as a calibration run counts them.
        run = Run(applied + figures["av_mean_ms"], figures["av_markers"] or 0, lateness)
        figures["needed_ms"] = round(run.needed_ms, 1)
        if run.on_time_ms is not None:
            figures["needed_plus_lateness_ms"] = round(run.on_time_ms, 1)
    first_frame = result.timings.first_frame if result.timings else None
    if watch is not None and result.mp4 is not None and first_frame is not None:
        figures |= split_offset(result.mp4, first_frame, on_screen)
    return figures


async def record_many(
    settings: RecorderSettings, url: str, count: int, duration: float, cold: bool, decompose: bool = False
) -> list[Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        if cold:
            for index in range(count):
                async with Recorder(settings) as recorder:
                    rows.append(await _one(recorder, url, duration, Path(tmp), index, decompose))
                print(json.dumps(rows[-1]), flush=True)
        else:
            async with Recorder(settings) as recorder:
                for index in range(count):
                    rows.append(await _one(recorder, url, duration, Path(tmp), index, decompose))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def across(rows: list[dict[str, Any]]) -> dict[str, Any]:
    means = [r["av_mean_ms"] for r in rows if r["av_mean_ms"] is not None]
    if not means:
        return {}
    return {
        "recordings": len(means),
        "mean_of_means_ms": round(statistics.fmean(means), 1),
        "std_of_means_ms": round(statistics.pstdev(means), 1),
        "min_mean_ms": min(means),
        "max_mean_ms": max(means),
        "within_15_ms": sum(abs(m) <= WITHIN_MS for m in means),
        "p95_at_most_30_ms": sum((r["av_p95_abs_ms"] or 999) <= 30 for r in rows),
        "median_std_within_ms": statistics.median(r["av_std_ms"] for r in rows if r["av_std_ms"] is not None),
        "with_lateness": sum(r.get("presentation_lateness_ms") is not None for r in rows),
    } | {
        f"std_of_{key}": round(statistics.pstdev(values), 1)
        for key in ("video_delay_ms", "beep_after_screen_ms", "needed_ms", "needed_plus_lateness_ms")
        if len(values := [r[key] for r in rows if r.get(key) is not None]) > 1
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sync", description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per recording (default 10)")
    parser.add_argument("--cold", action="store_true", help="a fresh recorder (Xvfb, Chromium) for every recording")
    parser.add_argument("--screen-mode", choices=("on", "off"), default=None, help="default: the recorder's")
    parser.add_argument("--grabber", choices=("x11grab", "damage"), default=None, help="default: the recorder's")
    parser.add_argument("--decompose", action="store_true", help="split each offset where the flash hit the screen")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    with page.serve() as test_page:
        url = page.grid_url(test_page)
        settings = page.recorder_settings(url)
        if args.screen_mode is not None:
            settings = settings.model_copy(update={"screen_mode": args.screen_mode == "on"})
        if args.grabber is not None:
            settings = settings.model_copy(update={"grabber": args.grabber})
        stored = asyncio.run(ensure_calibrated(settings))
        applied = calibration.av_offset_ms(settings)
        rows = asyncio.run(record_many(settings, url, args.recordings, args.duration, args.cold, args.decompose))
    summary = across(rows)
    print(json.dumps({"av_offset_applied_ms": applied, **summary}))
    if not args.no_write:
        path = write_result(
            "sync",
            {
                "av_offset_applied_ms": applied,
                "calibration": stored.model_dump() if stored else None,
                "across": summary,
                "recordings": rows,
            },
            options={
                "recordings": args.recordings,
                "duration_s": args.duration,
                "cold": args.cold,
                "screen_mode": settings.screen_mode,
                "grabber": settings.grabber,
                "decompose": args.decompose,
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="av_mean_ms is audio minus video over the file's sync markers, with the stored calibration "
            "(or the default) applied, corrected by the load's presentation_lateness_ms where known; av_std_ms is "
            "the spread within one file; needed_ms is the correction applied plus av_mean_ms, and "
            "needed_plus_lateness_ms adds the lateness.",
        )
        print(f"wrote {path}")
    return 0
