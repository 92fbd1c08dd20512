"""What the timeline costs: CPU per recording with it against without it, and timeline.json's size.

    python -m bench timeline [--pairs 3] [--duration 20] [--page webrtc|grid]

Both arms run the same build on the same page in one run; only RECORDER_TIMELINE differs, and the arms
alternate recording by recording (on, off, off, on, ...) so a drifting machine load hits both. The page is
the WebRTC loopback call (`recorder.reference.webrtc`: the wrapper and its getStats() polling have work to
do; the egress guard is off in both arms, as a loopback call needs) or the 2x2 grid. The timeline lives in
the recorder's own process and the page's renderer, so the figure compared is the whole process tree's
cores over the capture window (`all_cores`, as `bench guard`).
Writes bench/results/timeline-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine, page
from bench.fidelity import record_once
from bench.order import alternating
from bench.results import write_result

ARMS = {"on": "true", "off": "false"}
ALLOW = "127.0.0.1,localhost"
TARGET = 1.03  # the timeline may cost at most 3 % of a recording's CPU


def one_run(arm: str, url: str, duration: float, out: Path) -> dict[str, Any]:
    env = {**os.environ, "RECORDER_TIMELINE": ARMS[arm], "URL_ALLOWLIST": ALLOW}
    if "/webrtc" in url:
        # The egress guard lets WebRTC use no UDP it cannot proxy, so a loopback call connects only without it;
        # both arms alike.
        env["RECORDER_EGRESS_GUARD"] = "false"
    env.setdefault("RECORDER_LOG_LEVEL", "warning")
    figures = record_once(url, duration, out, env)
    keep = ("ok", "error", "all_cores", "capture_cores", "distinct_fps", "start_latency_s")
    run: dict[str, Any] = {"arm": arm, **{k: figures.get(k) for k in keep}}
    timeline = out.with_name(f"{out.stem}.timeline.json")
    if timeline.is_file():
        document = json.loads(timeline.read_text())
        media_seconds = document.get("duration") or duration
        run["timeline_bytes"] = timeline.stat().st_size
        run["timeline_bytes_per_minute"] = round(timeline.stat().st_size / (media_seconds / 60.0))
        run["timeline_events"] = len(document.get("events", []))
        run["timeline_series"] = len(document.get("series", []))
        run["timeline_tracks"] = len(document.get("tracks", []))
    return run


def mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench timeline", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="recordings per arm, alternating")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each recording")
    parser.add_argument("--page", choices=("webrtc", "grid"), default="webrtc", help="what is recorded")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet = machine.quiet()[1]
    info = machine.describe()
    workdir = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    runs: list[dict[str, Any]] = []
    try:
        with page.serve() as test_page:
            url = test_page.url("/webrtc") if args.page == "webrtc" else page.grid_url(test_page)
            for i, arm in alternating(list(ARMS), args.pairs):
                run = one_run(arm, url, args.duration, workdir / f"{arm}-{i}" / "rec.mp4")
                runs.append(run)
                print(json.dumps(run), flush=True)
                time.sleep(3)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary: dict[str, Any] = {}
    for arm in ARMS:
        done = [r for r in runs if r["arm"] == arm and r.get("ok") and r.get("all_cores")]
        summary[arm] = {
            "runs": len(done),
            "all_cores_mean": mean([r["all_cores"] for r in done]),
            "capture_cores_mean": mean([r["capture_cores"] for r in done if r.get("capture_cores")]),
            "distinct_fps_mean": mean([r["distinct_fps"] for r in done if r.get("distinct_fps")]),
        }
    sizes = [r["timeline_bytes_per_minute"] for r in runs if r.get("timeline_bytes_per_minute")]
    on, off = summary["on"]["all_cores_mean"], summary["off"]["all_cores_mean"]
    summary["on_vs_off_all_cores"] = round(on / off, 3) if on and off else None
    summary["within_target"] = summary["on_vs_off_all_cores"] is not None and summary["on_vs_off_all_cores"] <= TARGET
    summary["timeline_bytes_per_minute_mean"] = round(statistics.fmean(sizes)) if sizes else None
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        path = write_result(
            "timeline",
            {"summary": summary, "runs": runs},
            options=vars(args) | {"quiet_check": quiet, "allowlist": ALLOW},
            machine_info=info,
            notes="Same build, same page, one run; only RECORDER_TIMELINE differs, arms alternating. Target: the "
            "recorder tree's cores on/off within 3 %. timeline.json's size per recorded minute from the 'on' runs.",
        )
        print(f"wrote {path}")
    return 0
