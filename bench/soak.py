"""Soak: one long recording of the 2x2 sync page, the memory of every process sampled each minute.

    python -m bench soak [--duration 1800] [--interval 60] [--require-quiet]

One recorder in its own process (as for density), recording for `duration` seconds. Every `interval`
seconds its process tree is read from /proc: RSS and PSS of Chromium, FFmpeg, Xvfb, PulseAudio, the
recorder (Python) and Playwright's driver. Growth per process is the last sample minus the first one
after capture started, and the slope of a straight line through all of them (MB per hour). The file's
quality report over the whole length (fps, frozen spans, A/V drift) comes with it. Writes
bench/results/soak-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import machine, page
from bench.capture_options import add_capture_arguments, capture_options
from bench.concurrent import record_concurrently
from bench.metrics import recording_figures
from bench.procstats import TreeSampler
from bench.results import write_result
from bench.runner import Job


def growth(series: list[dict[str, Any]], start: float, end: float, key: str) -> dict[str, dict[str, float]]:
    """Per process kind: first and last `key` ("rss_mb" or "pss_mb") inside [start, end], and the slope."""
    inside = [s for s in series if start <= s["at"] <= end and s[key]]
    kinds = sorted({k for s in inside for k in s[key]})
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        points = [(s["at"], s[key].get(kind)) for s in inside]
        points = [(t, v) for t, v in points if v is not None]
        if len(points) < 2:
            continue
        t = np.array([p[0] for p in points]) - points[0][0]
        v = np.array([p[1] for p in points])
        slope = float(np.polyfit(t, v, 1)[0]) * 3600 if np.ptp(t) > 0 else 0.0
        out[kind] = {
            "first_mb": round(float(v[0]), 1),
            "last_mb": round(float(v[-1]), 1),
            "max_mb": round(float(v.max()), 1),
            "growth_mb": round(float(v[-1] - v[0]), 1),
            "slope_mb_per_hour": round(slope, 1),
        }
    total_first = sum(g["first_mb"] for g in out.values())
    total_last = sum(g["last_mb"] for g in out.values())
    out["total"] = {"first_mb": round(total_first, 1), "last_mb": round(total_last, 1)}
    out["total"]["growth_mb"] = round(total_last - total_first, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800 = 30 min)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between memory samples")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    machine.add_quiet_arguments(parser)
    add_capture_arguments(parser)
    args = parser.parse_args(argv)
    options = capture_options(args)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    sampler = TreeSampler(interval=args.interval, pss_every=1)
    try:
        with page.serve() as test_page:
            job = Job(
                url=page.grid_url(test_page),
                duration=args.duration,
                out_dir=str(workdir / "r0"),
                recording_id="soak",
                options=options.as_dict(),
            )
            batch = asyncio.run(record_concurrently([job], log_dir=workdir, sampler=sampler))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    outcome = batch.outcomes[0]
    done = outcome.done or {}
    series = sampler.rss_series("r0")
    start, end = done.get("capture_from") or 0.0, done.get("capture_to") or float("inf")
    result = {
        "ok": outcome.ok,
        "problem": outcome.problem or done.get("error"),
        "figures": recording_figures(outcome.done, outcome.usage),
        # The whole machine's busy cores while capturing, against the recording's own: the rest was someone else.
        "machine_cores_during_capture": round(m, 3) if (m := sampler.machine_cores(start, end)) is not None else None,
        # RSS is what a leak grows; PSS also moves with what other processes on the machine happen to share.
        "rss_growth": growth(series, start, end, "rss_mb"),
        "pss_growth": growth(series, start, end, "pss_mb"),
        "samples": [
            {
                "minute": round((s["at"] - start) / 60, 2),
                "rss_mb": {k: round(v, 1) for k, v in s["rss_mb"].items()},
                "pss_mb": {k: round(v, 1) for k, v in (s["pss_mb"] or {}).items()},
            }
            for s in series
        ],
    }
    for kind, g in result["rss_growth"].items():
        print(f"RSS {kind:<11} {g}", flush=True)
    figures = result["figures"]
    print(f"steady fps {figures['steady_fps']}  A/V mean {figures['av_mean_ms']} ms  drift {figures['av_drift_ms']} ms")
    if not args.no_write:
        path = write_result(
            "soak",
            result,
            options={
                "duration_s": args.duration,
                "interval_s": args.interval,
                "capture": options.as_dict(),
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="memory per process kind (RSS and PSS, MB) sampled every interval from /proc over the whole run; "
            "growth is measured inside the capture window (first frame -> stop). RSS growth is the leak signal; PSS "
            "also changes when other processes on the machine map the same libraries.",
        )
        print(f"wrote {path}")
    return 0 if outcome.ok else 1
