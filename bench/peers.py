"""Side by side: our capture against the peers' published capture command lines, same page, same sources.

    python -m bench peers [--peers jibri livekit attendee] [--n 1 3] [--duration 60] [--require-quiet]

For each capture (ours first) the 2x2 sync page is recorded at each N (default 1 and 3) concurrently,
each recording in its own recorder process: the same Xvfb, PulseAudio and Chromium set-up for everyone,
only the capture command differs (see bench/peer_commands.py for where each command comes from and how
it was adapted). Reported per capture and N: steady fps, gaps, frozen spans, A/V offset, CPU cores and
memory per recording, and the ratio of each to ours at the same N. Run bench/install-peer-tools.sh first
for GStreamer. Writes bench/results/peers-<date>.json.
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
from bench.density import run_n
from bench.peer_commands import PEERS
from bench.results import write_result

RATIO_KEYS = ("steady_fps", "capture_cores", "capture_cores_with_recorder", "capture_peak_pss_mb", "size_bytes")


def _median(result: dict[str, Any], key: str) -> float | None:
    values = sorted(r[key] for r in result["recordings"] if r.get(key) is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summary_row(result: dict[str, Any], ours: dict[str, Any] | None) -> dict[str, Any]:
    """Medians over the recordings of one run, and their ratio to ours at the same N."""
    row: dict[str, Any] = {"capture": result["capture"], "n": result["n"], "holds": result["holds"]}
    for key in (*RATIO_KEYS, "distinct_fps", "start_freeze_s", "av_mean_ms", "av_p95_abs_ms", "av_drift_ms"):
        row[key] = _median(result, key)
    row["gaps"] = sum(r["gaps"] or 0 for r in result["recordings"])
    row["frozen_spans"] = sum(r["frozen_spans"] or 0 for r in result["recordings"])
    row["failed"] = sum(1 for r in result["recordings"] if not r["ok"])
    row["errors"] = sorted({r["error"] or r["problem"] or "?" for r in result["recordings"] if not r["ok"]})
    if ours is not None and ours is not result:
        row["ratio_to_ours"] = {}
        for key in RATIO_KEYS:
            mine, theirs = _median(ours, key), row[key]
            row["ratio_to_ours"][key] = round(theirs / mine, 3) if mine and theirs is not None else None
    return row


def _line(row: dict[str, Any]) -> str:
    ratio = row.get("ratio_to_ours") or {}
    return (
        f"{row['capture']:<16} N={row['n']}  steady fps {row['steady_fps']}  gaps {row['gaps']} "
        f"frozen {row['frozen_spans']}  A/V {row['av_mean_ms']} ms  cores {row['capture_cores']} "
        f"(x{ratio.get('capture_cores')}; with the recorder {row['capture_cores_with_recorder']}, "
        f"x{ratio.get('capture_cores_with_recorder')})  PSS {row['capture_peak_pss_mb']} MB  failed {row['failed']}"
        + (f" {row['errors']}" if row["errors"] else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__.splitlines()[0])
    parser.add_argument("--peers", nargs="+", choices=sorted(PEERS), default=["jibri", "livekit", "attendee"])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 3], help="concurrent recordings per run")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of rest between runs")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    machine.add_quiet_arguments(parser)
    add_capture_arguments(parser)
    args = parser.parse_args(argv)
    if any(PEERS[p].kind == "gstreamer" for p in args.peers) and shutil.which("gst-launch-1.0") is None:
        parser.error("GStreamer is not installed: run bench/install-peer-tools.sh")
    options = capture_options(args)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-peers-"))
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    try:
        with page.serve() as test_page:
            url = page.grid_url(test_page)
            for n in args.n:
                ours: dict[str, Any] | None = None
                for capture in ["ours", *args.peers]:
                    peer = None if capture == "ours" else capture
                    result = asyncio.run(run_n(n, url, args.duration, options.as_dict(), workdir, peer=peer))
                    runs.append(result)
                    ours = result if capture == "ours" else ours
                    row = summary_row(result, ours)
                    rows.append(row)
                    print(_line(row), flush=True)
                    time.sleep(args.settle)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write:
        path = write_result(
            "peers",
            {"summary": rows, "commands": {p: PEERS[p].source for p in args.peers}, "runs": runs},
            options={
                "duration_s": args.duration,
                "n": args.n,
                "peers": args.peers,
                "capture": options.as_dict(),
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="same page, same Xvfb/PulseAudio/Chromium per recording; only the capture command differs. "
            "ratio_to_ours = peer median / our median at the same N. Peers have no start-of-capture report: "
            "their CPU window opens 2 s after the command starts. Sources and adaptations: bench/peer_commands.py.",
        )
        print(f"wrote {path}")
    return 0
