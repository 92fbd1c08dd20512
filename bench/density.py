"""Density: N concurrent 720p30 recordings of the 2x2 sync page on this machine, N = 1..6.

    python -m bench density [--n 1 2 3 4 5 6] [--duration 60] [--preset P --crf C --threads T]
                            [--flags ours|naive --chromium-add F --chromium-drop F] [--require-quiet]

Each recording is its own recorder in its own process (Xvfb, PulseAudio, Chromium, FFmpeg), all started
together. Per recording: distinct fps, gaps, frozen spans, FFmpeg's duplicated frames, A/V offset, CPU
cores and peak memory over the capture window. The answer is the largest N at which every recording
keeps >= 29.5 distinct fps with no gap and no frozen span. Writes bench/results/density-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine, page
from bench.capture_options import add_capture_arguments, capture_options
from bench.concurrent import record_concurrently
from bench.metrics import holds, recording_figures, spread
from bench.results import write_result
from bench.runner import Job


def add_run_arguments(parser: argparse.ArgumentParser, *, duration: float) -> None:
    parser.add_argument(
        "--duration", type=float, default=duration, help=f"seconds per recording (default {duration:g})"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where recordings go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the recordings")
    machine.add_quiet_arguments(parser)
    add_capture_arguments(parser)


async def run_n(
    n: int, url: str, duration: float, options: dict[str, Any], workdir: Path, *, peer: str | None = None
) -> dict[str, Any]:
    """N recordings at once (our capture, or a peer's command on the same sources) and their figures."""
    where = workdir / (peer or "ours") / f"n{n}"
    jobs = [
        Job(url=url, duration=duration, out_dir=str(where / f"r{i}"), recording_id=f"r{i}", options=options, peer=peer)
        for i in range(n)
    ]
    batch = await record_concurrently(jobs, log_dir=where)
    rows = []
    for outcome in batch.outcomes:
        row = recording_figures(outcome.done, outcome.usage)
        row["problem"] = outcome.problem
        row["warm_s"] = (outcome.ready or {}).get("warm_s")
        rows.append(row)
    every = bool(rows) and all(holds(r) for r in rows)
    return {
        "capture": peer or "ours",
        "n": n,
        "holds": every,
        "machine_cores_busy": batch.machine_cpu.get("cores_busy_whole_run"),
        "machine_cores_while_all_capture": batch.machine_cpu.get("machine_cores_while_all_capture"),
        "recordings_cores_while_all_capture": batch.machine_cpu.get("recordings_cores_while_all_capture"),
        "steady_fps": spread(rows, "steady_fps"),
        "distinct_fps": spread(rows, "distinct_fps"),
        "start_freeze_s": spread(rows, "start_freeze_s"),
        "capture_cores_per_recording": spread(rows, "capture_cores"),
        "capture_cores_with_recorder_per_recording": spread(rows, "capture_cores_with_recorder"),
        "all_cores_per_recording": spread(rows, "all_cores"),
        "capture_peak_pss_mb": spread(rows, "capture_peak_pss_mb"),
        "av_mean_ms": spread(rows, "av_mean_ms"),
        "recordings": rows,
    }


def _line(result: dict[str, Any]) -> str:
    fps = result["steady_fps"] or {}
    cores = result["capture_cores_per_recording"] or {}
    pss = result["capture_peak_pss_mb"] or {}
    gaps = sum((r["gaps"] or 0) for r in result["recordings"])
    frozen = sum((r["frozen_spans"] or 0) for r in result["recordings"])
    return (
        f"N={result['n']}: {'holds' if result['holds'] else 'FAILS'}  steady fps min {fps.get('min')} "
        f"median {fps.get('median')}  gaps {gaps} frozen {frozen}  cores/rec {cores.get('median')}  "
        f"PSS/rec {pss.get('median')} MB  machine {result['machine_cores_while_all_capture']} cores "
        f"(recordings {result['recordings_cores_while_all_capture']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench density", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="concurrent recordings")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of rest between values of N")
    parser.add_argument("--stop-after-failures", type=int, default=2, help="stop after this many N in a row fail")
    add_run_arguments(parser, duration=60.0)
    args = parser.parse_args(argv)
    options = capture_options(args)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-density-"))
    results = []
    failures = 0
    try:
        with page.serve() as test_page:
            url = page.grid_url(test_page)
            for n in args.n:
                result = asyncio.run(run_n(n, url, args.duration, options.as_dict(), workdir))
                results.append(result)
                print(_line(result), flush=True)
                failures = 0 if result["holds"] else failures + 1
                if failures >= args.stop_after_failures:
                    break
                time.sleep(args.settle)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    held = [r["n"] for r in results if r["holds"]]
    largest = max((n for n in held if all(r["holds"] for r in results if r["n"] <= n)), default=0)
    print(f"largest N where every recording holds: {largest}")
    if not args.no_write:
        path = write_result(
            "density",
            {"largest_n_holding": largest, "runs": results},
            options={"duration_s": args.duration, "n": args.n, "capture": options.as_dict(), "quiet_check": quiet},
            machine_info=info,
            notes="holds = every recording keeps >= 29.5 distinct pictures/s after the start freeze, no gap, no "
            "frozen span after the start, real time. "
            "CPU and memory per recording over its capture window; capture = Chromium + FFmpeg + Xvfb + PulseAudio "
            "(all = plus the recorder's Python process and Playwright's driver). PSS splits shared pages fairly.",
        )
        print(f"wrote {path}")
    return 0
